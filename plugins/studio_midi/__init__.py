"""MIDI file support shared by the music and audio plugins: reading a Standard MIDI File
safely (bounded, every failure a UserError naming the file) with the same rules at
validation and at run time. Not a plugin (it registers nothing); any plugin may import
`studio_midi.reading`."""
