// tests for check: being written
