"""Webhooks of the Batch API gateway: a batch's end POSTed to one operator-set URL.

    signing.py   the `whsec_…` secret and the Standard Webhooks signature
    outbox.py    the durable outbox: one fsynced file per undelivered event
    delivery.py  the hook on a batch's status, the sender and its retries

`BatchStatuses.save` (batch_statuses.py) calls the hook before a batch's new
status is stored, so an event is on disk before its batch is seen as finished,
and a restart delivers what is left in the outbox (docs/batch-api.md, "Webhooks").
"""
