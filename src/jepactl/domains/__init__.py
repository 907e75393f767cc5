"""One folder per domain: its method(s), readers, probe protocol, metrics and recipe classes.

Nothing outside a domain imports it: the registry (``jepactl/registry.py``) names each method
module as a string and imports it on first use, and a domain never imports another domain
(``tests/test_import_layers.py``).
"""
