"""PowerSync credentials: the RS256 keys, the tokens clients hand to the PowerSync service, JWKS."""
