"""bookstream's kopf operator: LibraryInstance -> worker StatefulSets, safe scale-down, status."""
