"""The HTTP service: FastAPI app, job queue and persistence."""
