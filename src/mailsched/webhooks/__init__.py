"""Webhooks: signed HTTP POSTs of a user's events to the endpoints they register.

* :mod:`.api` — the endpoints API (``/api/v1/webhooks``);
* :mod:`.fanout` — each event becomes a message per subscribed endpoint;
* :mod:`.deliver` — the deliverer: claim, POST, record, retry;
* :mod:`.payloads` — the bodies (one event, or a batch) and their ``webhook-id``;
* :mod:`.signing` — Standard Webhooks 1.0 headers and secrets;
* :mod:`.urls`, :mod:`.transport` — the SSRF rules, at creation and at send time.
"""
