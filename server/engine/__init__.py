"""Droplet3D and DropletVideo generation on diffusers components."""
