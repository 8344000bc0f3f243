// tests for cli: being written
