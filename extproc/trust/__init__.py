"""Who may set a request's SLA class: `settings.py` (the aigrid.yaml section, imported by the config
schema), `sla.py` (the trust rule, pure). Import from the submodules."""
