// tests for pictures: being written
