"""The rehearsal: an Azure deployment acted out on this machine (`cloudhpc up --rehearse`)."""
