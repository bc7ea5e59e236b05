"""The REST API for users (`/api/v1/`): authentication by API key, scopes, rate limits, one
error shape, idempotent POSTs. Views stay thin: parse, call one selector or service, render."""
