"""LLRP RFID readers: the sllurp-based driver, its settings, and a reader simulator."""
