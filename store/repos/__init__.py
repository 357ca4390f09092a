"""Every database query of SignBridge, one module per table (or per closely related tables).

Callers above `store/` never open a session: they call a function here that opens one, does one
unit of work and commits. That keeps transactions short (no session held across an `await` on a
chat or provider API) and makes each query findable in one place.
"""
