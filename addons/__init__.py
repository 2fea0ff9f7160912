"""sidegate: Amazon API Gateway's request pipeline as mitmproxy addons, in front of any HTTP service."""
