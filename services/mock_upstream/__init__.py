"""Built-in simulator of every upstream gpt4batch speaks to (`gpt4batch mock-upstream`)."""
