"""The embedded server (Litestar on uvicorn): the only package that imports litestar."""
