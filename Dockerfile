# StreamWarden image: one image, one console script; docker-compose picks the command.
# The base is pinned to an exact tag, the dependencies to exact versions and hashes
# (deploy/requirements.lock, from `uv pip compile`; regenerate it when pyproject.toml changes).
# The rules in the image are only the package's examples (`streamwarden demo`); docker-compose
# mounts the rules, channels and silences the worker runs with (see README "Deployment").
FROM python:3.11.11-slim-bookworm
WORKDIR /app
COPY deploy/requirements.lock ./requirements.lock
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY producers ./producers
COPY streamwarden ./streamwarden
COPY rules ./rules
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 streamwarden \
    && mkdir -p /var/lib/streamwarden \
    && chown streamwarden /var/lib/streamwarden
USER streamwarden
ENTRYPOINT ["streamwarden"]
CMD ["--help"]
