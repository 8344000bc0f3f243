// tests for generators: being written
