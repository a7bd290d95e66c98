"""eni_async: release secondary private IPs from Tencent Cloud ENIs, asynchronously and within rate limits."""

__version__ = "0.1.0"
