// tests for compare: being written
