"""Policy files: YAML documents with positions -> validated, frozen models -> one PolicySet."""
