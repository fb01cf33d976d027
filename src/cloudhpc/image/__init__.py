"""cloudhpc node image: one recipe for Azure and for the rehearsal."""
