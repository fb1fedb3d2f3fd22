"""A shop's tokens: the policy (pure), the provider and its refresh protocol,
the in-process cache, the token-endpoint call, and the keeper of new pairs
the store could not take yet."""
