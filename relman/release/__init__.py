"""The release workflow: policy, gates, approvals, phase changes, channels, audit checks,
model cards, keys and signed bundles. Qt-free and torch-free at import."""
