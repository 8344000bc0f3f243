// tests for simulate: being written
