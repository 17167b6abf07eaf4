"""The producer: the REST API that stores campaigns, and the dispatcher that queues due work."""
