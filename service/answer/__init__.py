"""`POST /v1/answer`: SEM's own API (protocol: the wire models; serving: the response; router: the route)."""
