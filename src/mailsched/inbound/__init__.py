"""Mail that comes back to mailsched: bounces and complaints, read from the raw message."""
