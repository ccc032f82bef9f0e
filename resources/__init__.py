"""API clients and storage resources. Nothing here knows a MINDEX table or asset name."""
