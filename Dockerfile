# One image for the web process and the vote worker; the command picks the role:
#   web (default)  python -m polling.serve --port 8000
#   worker         python manage.py consume_votes
#   migrations     python manage.py migrate --no-input
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The embedded mode (no DATABASE_URL) keeps its SQLite file in a writable volume.
    SQLITE_PATH=/data/db.sqlite3

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code belongs to root and is only readable by the user the processes run as, so a
# compromised process cannot rewrite it.
COPY manage.py ./
COPY polling ./polling
COPY polls ./polls
COPY leaderboard ./leaderboard
COPY realtime ./realtime

# collectstatic only reads settings; a throwaway key satisfies the production check.
RUN SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost python manage.py collectstatic --no-input -v0 \
    && python -m compileall -q /app

# A numeric USER lets orchestrators verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 polling \
    && useradd --system --uid 10001 --gid polling --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin polling \
    && mkdir /data && chown polling:polling /data
USER 10001:10001

# 8000: HTTP and WebSockets (web); 9102: the worker's Prometheus metrics (WORKER_METRICS_PORT).
EXPOSE 8000 9102
# uvicorn with the project's options (polling.serve); WEB_CONCURRENCY processes.
CMD ["python", "-m", "polling.serve", "--port", "8000"]
