"""The Azure provider: ARM template export (arm.py), its linter (lint.py) and the cloud-init
custom data that runs the same node bootstrap as the local provider (cloudinit.py)."""
