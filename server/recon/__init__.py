"""Orbit frames → calibrated cameras, masks and a textured mesh."""
