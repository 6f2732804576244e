"""The SEM HTTP service: FastAPI over `sem.loop`, built by `service.app.create_app(settings)`."""
