"""The Voice Live wire models: typed client/server events and the session object. Pure data."""
