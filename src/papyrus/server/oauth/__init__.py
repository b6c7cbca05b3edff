"""Sign-in with an OpenID provider (Google) through a Papyrus-owned browser flow."""
