from cartflow.cli import app

app()
