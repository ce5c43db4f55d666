"""The owner's call-log console: server-rendered pages and the same data as JSON.

    /calls             recent calls, newest first; filters: from, to (dates), outcome, caller
    /calls/{CallSid}   one call: the conversation, latency per turn, what was booked or escalated
    /bookings          upcoming bookings            /messages   messages taken for the owner
    /api/calls  /api/calls/{CallSid}  /api/bookings  /api/messages   the same, as JSON

Every route here needs ADMIN_TOKEN (api/auth.py). Dates in filters are the business's local
dates; JSON times are UTC (ISO 8601). One module per job:

    routes.py      the URL table                 errors.py      BadFilter -> 400, JSON or the error page
    query.py       reading a request's filters   listings.py    what pages and JSON both ask of storage
    pages.py       the HTML pages (templates/)   json_api.py    the JSON
    formatting.py  the pages' Jinja filters      latency.py     the latency bars' SVG geometry
"""
