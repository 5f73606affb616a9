# One image for the web process and the vote worker; the command picks the role.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY manage.py ./
COPY polling ./polling
COPY polls ./polls
COPY leaderboard ./leaderboard
COPY realtime ./realtime

# collectstatic only reads settings; a throwaway key satisfies the production check.
RUN SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost python manage.py collectstatic --no-input -v0

RUN useradd --system --uid 10001 --home-dir /app polling && chown -R polling /app
USER polling

EXPOSE 8000
# The web process; the worker runs the same image with `python manage.py consume_votes`.
CMD ["python", "-m", "daphne", "-b", "0.0.0.0", "-p", "8000", "polling.asgi:application"]
