"""The polls domain: writes in services, reads in selectors and live, and the rules they
keep (ballots, voters, idempotency, texts, exceptions). Knows neither HTTP nor the worker."""
