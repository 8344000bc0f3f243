// tests for lower: being written
