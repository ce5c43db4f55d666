"""Storage: the call log, bookings and messages in one SQL database (SQLite or PostgreSQL).

    storage = Storage.from_settings(settings)
    await storage.start()                    # migrate, sweep calls left open, start the writer
    storage.calls      CallLog   - calls, turns, events; review queries
    storage.bookings   Bookings  - create / move / cancel with the double-booking guarantee
    storage.messages   Messages  - messages taken for the owner
    storage.writer     Writer    - the background queue the recorder feeds

The words it stores (statuses, outcomes, event kinds, ...) are services/storage/vocabulary.py's.
"""

from services.storage.bookings import BookingFilter, BookingNotFound, Bookings, SlotTaken, slot_cells
from services.storage.calls import CallDetail, CallFilter, CallLog, CallSummary, TurnRow, derive_outcome
from services.storage.database import Database, StorageError, display_url
from services.storage.messages import MessageFilter, Messages
from services.storage.records import BookingRecord, MessageRecord
from services.storage.service import Storage

__all__ = [
    "BookingFilter", "BookingNotFound", "BookingRecord", "Bookings", "CallDetail", "CallFilter",
    "CallLog", "CallSummary", "Database", "MessageFilter", "MessageRecord", "Messages", "SlotTaken",
    "Storage", "StorageError", "TurnRow", "derive_outcome", "display_url", "slot_cells",
]
