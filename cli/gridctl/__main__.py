from gridctl.main import entry

entry()
