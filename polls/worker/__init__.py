"""The vote worker (`manage.py consume_votes`): a poll loop (loop) over small steps: pending
records per partition, decoding (batches), the batch transaction (apply), dead letters,
offset commits, progress lines and the lag watchdog."""
