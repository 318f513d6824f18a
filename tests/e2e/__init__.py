"""End-to-end scenarios: the seed's test plan on the local stack, both backends, a real monorepo."""
