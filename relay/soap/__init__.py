"""Client pull in Pure360's own SOAP dialect (SOAP 1.1, RPC/encoded, Apache maps).

`handleRequest(contextId, className, processName, entityData, processData)` with
`bus_facade_context` login/logout and `bus_facade_eventNotification` getBatch/markRead, on
top of the same lease and ack as the JSON pull. codec: envelopes; sessions: contextIds;
service: the processes; routes: the aiohttp handlers and the WSDL (`SoapPull`).
"""

from .routes import SoapPull

__all__ = ["SoapPull"]
