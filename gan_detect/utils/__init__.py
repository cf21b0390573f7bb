"""Small shared pieces with no project imports: checkpoint IO, threads, verbosity, drawing."""
