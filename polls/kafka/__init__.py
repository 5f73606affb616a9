"""The Kafka side: topic names and client settings (topics), the vote event (events), the
vote bus that makes a vote durable (bus), and Kafka's readiness check (health)."""
