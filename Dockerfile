# One image for every Dialer process: `dialer api` (the default), `dialer worker`,
# `dialer worker-health`, `dialer db upgrade`. Multi-stage: the project is installed into a
# virtualenv in the build stage; the final stage gets only that virtualenv (every dependency
# is a wheel, so neither stage compiles anything, and the final one holds no pip cache, no
# source tree and no build tools), and runs as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/dialer
WORKDIR /src
# The whole project (.dockerignore keeps tests, local state and secrets out).
COPY . .
RUN /opt/dialer/bin/pip install . \
    && /opt/dialer/bin/pip uninstall -y pip setuptools wheel

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 dialer \
    && useradd --system --uid 10001 --gid dialer --home-dir /var/lib/dialer \
       --create-home --shell /usr/sbin/nologin dialer
COPY --from=build /opt/dialer /opt/dialer
ENV PATH=/opt/dialer/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DIALER_DATA_DIR=/var/lib/dialer \
    DIALER_API_HOST=0.0.0.0 \
    DIALER_API_PORT=8000
USER dialer:dialer
WORKDIR /var/lib/dialer
EXPOSE 8000
# SIGTERM starts the graceful shutdown of either process (see README, "Graceful shutdown").
STOPSIGNAL SIGTERM
ENTRYPOINT ["dialer"]
CMD ["api"]
