"""The controller's rules, PURE: what a topic request turns into, as metadata records."""
