// tests for csv: being written
