"""Legacy record mode: the receptionist turn by turn over <Say>/<Record>, for numbers that cannot
use Media Streams (docs/legacy.md)."""
