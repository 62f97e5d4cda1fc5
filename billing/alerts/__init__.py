"""Budget alerts after usage is committed, and the webhook outbox they are queued in."""
