class GGUFError(Exception):
    """A GGUF file that cannot be read: names the file, the byte offset and the problem."""

    def __init__(self, path, offset, problem):
        self.path = str(path)
        self.offset = offset
        self.problem = problem
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{self.path}{where}: {problem}")
