"""Delivery: the client, the retry policy, the ledger and the sender of one connection's bodies.

The statuses and the sender are re-exported here, because every face reads them.
"""
from anycost.delivery.results import (ALREADY_DELIVERED, DELIVERED, DRY_RUN, FAILED, INVALID, NOT_SENT,
                                      REFUSED, VALID, BodyResult, from_record, result_for)
from anycost.delivery.sender import ConnectionSender, Observer, month_limit_refusal, rows_held, sender_for

__all__ = ["ALREADY_DELIVERED", "DELIVERED", "DRY_RUN", "FAILED", "INVALID", "NOT_SENT", "REFUSED", "VALID",
           "BodyResult", "ConnectionSender", "Observer", "from_record", "month_limit_refusal", "result_for", "rows_held",
           "sender_for"]
