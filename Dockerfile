# StreamWarden image: one image, one console script; docker-compose picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY producers ./producers
COPY streamwarden ./streamwarden
RUN pip install --no-cache-dir . && useradd --system --uid 10001 streamwarden
COPY rules ./rules
COPY deploy ./deploy
USER streamwarden
ENTRYPOINT ["streamwarden"]
CMD ["--help"]
